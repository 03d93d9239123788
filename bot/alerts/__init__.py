"""Alerts: rules over runs and actions (rules.py, pure), the rolling measures they read
(measures.py), episodes and their lifecycle (episodes.py), what people do with an alert
(actions.py: acknowledge, mute, pause), and the messages each change queues (messages.py)."""
