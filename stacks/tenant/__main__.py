"""Stack <town>.<site>: one town tenant. The program lives in kumiai_stacks.programs."""

from kumiai_stacks.programs import tenant_main

tenant_main()
