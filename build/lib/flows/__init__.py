"""Where each customer is: lifecycle stages, business events, points, and operator-written flows."""
