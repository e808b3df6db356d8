"""The command line: `peerledger` (`main.main`), one module per command family."""
