"""HTTP and command-line interfaces of Passerelle."""
