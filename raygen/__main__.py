from raygen.cli import main

raise SystemExit(main())
