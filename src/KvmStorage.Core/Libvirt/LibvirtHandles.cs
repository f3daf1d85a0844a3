using System.Runtime.InteropServices;

namespace KvmStorage.Core.Libvirt;

/// <summary>A <c>virConnectPtr</c>; released with <c>virConnectClose</c>.</summary>
internal sealed class ConnectionHandle : SafeHandle
{
    public ConnectionHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virConnectClose(handle) >= 0;
}

/// <summary>A <c>virStoragePoolPtr</c>; released with <c>virStoragePoolFree</c>.</summary>
internal sealed class PoolHandle : SafeHandle
{
    public PoolHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal PoolHandle(IntPtr existing)
        : this() => SetHandle(existing);

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virStoragePoolFree(handle) == 0;
}

/// <summary>A <c>virStorageVolPtr</c>; released with <c>virStorageVolFree</c>.</summary>
internal sealed class VolumeHandle : SafeHandle
{
    public VolumeHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal VolumeHandle(IntPtr existing)
        : this() => SetHandle(existing);

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virStorageVolFree(handle) == 0;
}

/// <summary>A <c>virDomainPtr</c>; released with <c>virDomainFree</c>.</summary>
internal sealed class DomainHandle : SafeHandle
{
    public DomainHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal DomainHandle(IntPtr existing)
        : this() => SetHandle(existing);

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virDomainFree(handle) == 0;
}

/// <summary>A <c>virSecretPtr</c>; released with <c>virSecretFree</c>.</summary>
internal sealed class SecretHandle : SafeHandle
{
    public SecretHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal SecretHandle(IntPtr existing)
        : this() => SetHandle(existing);

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virSecretFree(handle) == 0;
}
