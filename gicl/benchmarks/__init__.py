"""One module per `gicl bench` kind; each defines `register(subparsers)`."""
