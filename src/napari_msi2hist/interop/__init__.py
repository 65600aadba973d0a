"""Files other tools read and write, for what needs a registration transform: elastix/transformix
parameter files, SpatialData stores, QuPath GeoJSON, displacement fields. Above ``registration``
(they carry its :class:`~napari_msi2hist.registration.transforms.Transform`), below ``workflows``."""
