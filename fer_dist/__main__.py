"""`python -m fer_dist` (also what torchrun runs with `-m fer_dist train ...`)."""
from fer_dist.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
