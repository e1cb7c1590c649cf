from lrrtool.cli import main

main()
