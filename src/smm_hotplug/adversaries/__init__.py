"""adversaries"""
