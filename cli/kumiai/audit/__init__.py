"""The audit trail and approvals: who changed what, when, with whose approval; the auditor's reports."""
