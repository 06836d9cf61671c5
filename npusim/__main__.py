from npusim.cli.main import main

main()
