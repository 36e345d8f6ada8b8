"""Pretrained trunks for the cell classifier: Keras ports of published networks, with their
published weights read by a reader that runs nothing the weight file names."""
