"""What a change to the inventory would do: the desired state at two git refs, compared for auditors."""
