import Kernels
print("bench")
