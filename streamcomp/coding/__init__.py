"""Coding stages shared by methods: entropy coding, quantization, wavelet lifting, the residual coder."""
