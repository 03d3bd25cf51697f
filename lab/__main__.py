"""``python -m lab``: the same CLI as the ``lab`` script (the API's child process starts it this way)."""

from lab.main import main

if __name__ == "__main__":
    main()
