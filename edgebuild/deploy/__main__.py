from edgebuild.deploy.cli import main

main()
