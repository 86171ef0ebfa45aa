from onebit.cli import main

raise SystemExit(main())
