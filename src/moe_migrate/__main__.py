from moe_migrate.cli import main

raise SystemExit(main())
