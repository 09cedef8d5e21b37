"""The device's own screen: the pygame UI for the 7" panel."""
