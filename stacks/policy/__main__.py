"""PolicyPack kumiai-isolation; the rules live in kumiai_stacks.rules."""

from kumiai_stacks.policypack import serve

serve()
