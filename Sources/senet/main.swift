import SENet
print("senet")
