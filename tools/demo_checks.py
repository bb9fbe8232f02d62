"""stub"""
def check_copy_flow(world, result, stats, walker):
    pass
