"""The laptop client: pairs with a device, moves packages to and from the relay.

It is trusted with what its owner types and reads, nothing else: plaintext goes
to the device to be packaged and comes back from it decrypted.
"""
