"""The preference centre: ``/p/{token}``, where the person sees and changes every channel and purpose."""
