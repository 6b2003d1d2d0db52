"""Networks: the architectures and their blocks (encoders, flow layers, DRBN, N2LDiff), built from keyword arguments."""
