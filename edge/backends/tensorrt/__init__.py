"""TensorRT on the device: the runtime backend, the engine cache and the builder.

Data flows one way: builder -> cache (where plans are kept and found) -> runtime (which only
runs a plan). Nothing here imports tensorrt or pycuda at module level.
"""
