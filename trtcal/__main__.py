from trtcal.cli.main import main

raise SystemExit(main())
