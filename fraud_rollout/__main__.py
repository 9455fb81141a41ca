import sys

from fraud_rollout.cli import main

sys.exit(main())
