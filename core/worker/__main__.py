from core.worker.server import main

raise SystemExit(main())
