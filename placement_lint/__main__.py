from placement_lint.entry import main

main()
