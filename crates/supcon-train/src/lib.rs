//! The two-stage SupCon pipeline and the supcon command-line tool.
