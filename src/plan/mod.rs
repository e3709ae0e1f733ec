//! The planner: sweep expansion and run keys.
