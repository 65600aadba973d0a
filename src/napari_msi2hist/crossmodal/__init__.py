"""The other direction (seeds 003 and 004): H&E features onto the MSI grid, regression of MSI principal
components from them, tissue classification, and H&E-guided MSI super-resolution."""
