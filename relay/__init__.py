"""The untrusted relay: a store-and-forward mailbox server for packages."""
