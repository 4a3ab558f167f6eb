from core.evals.cli import main

raise SystemExit(main())
