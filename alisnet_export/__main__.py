"""``python -m alisnet_export`` is the same as the ``alisnet-export`` command."""

from .cli import main

main()
