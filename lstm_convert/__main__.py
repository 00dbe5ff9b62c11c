from lstm_convert.cli import main

raise SystemExit(main())
