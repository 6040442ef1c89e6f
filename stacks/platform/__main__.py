"""Stack <site>: the site platform. The program lives in kumiai_stacks.programs."""

from kumiai_stacks.programs import platform_main

platform_main()
