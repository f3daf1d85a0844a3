namespace KvmStorage.Core.Backends;

/// <summary>Error ids of what a backend cannot do on its host, whichever command asked.</summary>
public static class BackendErrorIds
{
    /// <summary>-Live on a host without a daemon, or on a domain that is not running.</summary>
    public const string LiveChangeUnavailable = "LiveChangeUnavailable";

    /// <summary>An operation the offline backend cannot do (start or stop a pool).</summary>
    public const string DaemonRequired = "LibvirtDaemonRequired";

    /// <summary>A file pool must be running for libvirt to take a new volume.</summary>
    public const string PoolNotActive = "PoolNotActive";

    /// <summary>The image was written but the pool refresh that makes libvirt list it failed.</summary>
    public const string PoolRefreshFailed = "PoolRefreshFailed";

    /// <summary>A hot-unplug was requested but the guest had not released the disk when the wait ended.</summary>
    public const string LiveDetachPending = "LiveDetachPending";
}
