"""Re-heading: fine-tune a trained model to another m/z channel list.

A model's channels are the m/z of the chemistry it was trained on; another lab's MSI has other m/z.
Re-heading keeps everything a model learnt that does not depend on which m/z come in (the U-Net's body
and its decoder to RGB, and the discriminator's body) and builds a new, freshly initialised input layer
for the new channel count: the first convolution of the generator (``in_channels`` -> ``ngf``) and of the
discriminator (``in_channels + 3`` -> ``ndf``). Everything else is loaded from the base checkpoint, and
the base's architecture (ngf, depth, norm) wins over the training configuration.

Only tensors whose shape differs in the input-channel axis alone may be left out; anything else
(another depth or width) is refused, so a re-head can never silently become training from scratch.
"""

from __future__ import annotations

from torch import nn


def load_reheaded(net: nn.Module, state: dict, what: str = "generator") -> list[str]:
    """Load a state into a network except its input layer's tensors.

    The input layer keeps its fresh initialisation; the names of the tensors left out are returned.

    Parameters
    ----------
    net
        The new network, built with the new input-channel count.
    state
        The base network's state dict (same architecture but the input channels).
    what
        Name used in error messages.

    Returns
    -------
    list of str
        The state-dict keys not loaded (the input layer's weights).

    Raises
    ------
    ValueError
        If a tensor differs in anything but its input-channel axis, or a key is missing.
    """
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"{what}: the base checkpoint lacks {missing[:3]}: another architecture")
    load, skipped = {}, []
    for k, v in state.items():
        if k not in own:
            raise ValueError(f"{what}: the base checkpoint has {k!r}, the new network has not")
        v = v.float() if v.is_floating_point() else v
        if own[k].shape == v.shape:
            load[k] = v
            continue
        a, b = tuple(own[k].shape), tuple(v.shape)
        if len(a) == 4 and len(b) == 4 and a[0] == b[0] and a[2:] == b[2:]:
            skipped.append(k)  # an input convolution: (out, in, kh, kw) with another `in`
            load[k] = own[k]
        else:
            raise ValueError(f"{what}: {k} has shape {b} in the base, {a} here: cannot re-head")
    if len(skipped) > 1:
        raise ValueError(f"{what}: more than the input layer differs ({skipped}): cannot re-head")
    net.load_state_dict(load)
    return skipped


def rehead_message(base_path: str, old_n: int, new_n: int, skipped: list[str]) -> str:
    """Write the one line a user sees when a model is re-headed.

    Parameters
    ----------
    base_path : str
        The base checkpoint.
    old_n, new_n : int
        Input channels of the base and of the new model.
    skipped : list of str
        The base's parameters not carried over (the new input layer).

    Returns
    -------
    str
        The message.
    """
    return (
        f"re-headed {base_path}: kept its trained body and decoder, new input layer "
        f"({', '.join(skipped) or 'none'}) for {new_n} m/z channels (the base had {old_n})"
    )


def reheaded_contract_kwargs(base_contract) -> dict:
    """Give ``contract_from_data`` the keywords for re-heading a model.

    The new m/z come from the data, but the grid, padding, tolerance and normalisation stay the
    base's (its decoder was trained for them).

    Parameters
    ----------
    base_contract : ChannelContract
        The base model's contract.

    Returns
    -------
    dict
        ``working_pixel_um``, ``padding``, ``norm`` and ``tolerance``.
    """
    c = base_contract
    return {
        "working_pixel_um": c.working_pixel_um,
        "padding": c.padding,
        "norm": c.spectrum_norm,
        "tolerance": c.tolerance,
    }
