"""UniCompress: one shared conditional INR for all chunks (teacher distilled into a student) over a
wavelet residual coder: parameters, network, training, chunk layout and the method itself."""
