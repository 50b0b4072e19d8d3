from textdistill.cli import main

raise SystemExit(main())
