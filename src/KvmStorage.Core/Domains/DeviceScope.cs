namespace KvmStorage.Core.Domains;

/// <summary>Which definition of a VM a disk change affects: its persistent definition, the running VM, or both.</summary>
[Flags]
public enum DeviceScope
{
    /// <summary>The backend decides: the persistent definition, plus the running VM when it is running.</summary>
    Default = 0,

    /// <summary>The running VM (hot-plug); gone at its next start unless <see cref="Config"/> is given too.</summary>
    Live = 1,

    /// <summary>The persistent definition; a running VM sees the change at its next start.</summary>
    Config = 2,
}
