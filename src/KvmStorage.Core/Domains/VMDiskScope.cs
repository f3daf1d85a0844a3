namespace KvmStorage.Core.Domains;

/// <summary>Where a VM's disk is defined: in the persistent definition, in the running VM only, or in both.</summary>
public enum VMDiskScope
{
    /// <summary>In the persistent definition only: the VM does not run, or gets the disk at its next start.</summary>
    Persistent = 1,

    /// <summary>In the running VM only (hot-plugged with -Live, or a detach still pending in the persistent one): gone at the next start.</summary>
    Live = 2,

    /// <summary>In the persistent definition and in the running VM.</summary>
    Both = 3,
}
