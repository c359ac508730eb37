from hone.cli import main

raise SystemExit(main())
