"""What people look at: the Gradio chat page, the operator console, `status` and the terminal chat."""
