"""napari-msi2hist: MSI to synthetic H&E, and MSI-to-H&E registration.

Importing the package is cheap on purpose: nothing heavy (torch, napari, SimpleITK) is imported here.
"""

__version__ = "0.1.0"
