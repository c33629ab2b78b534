//! Text that came from items, made safe to show: for a terminal (no
//! control characters or escape sequences) and for reports and logs (no
//! credentials).
