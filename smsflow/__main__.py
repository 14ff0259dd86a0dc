from smsflow.cli import main

main()
