"""Eligibility: may we contact this person on this channel for this purpose, now, and why?"""
