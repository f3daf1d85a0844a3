namespace KvmStorage.Core.Libvirt;

/// <summary>A storage volume handle (<c>virStorageVolPtr</c>).</summary>
public sealed class LibvirtVolume : LibvirtObject
{
    private readonly VolumeHandle handle;

    internal LibvirtVolume(VolumeHandle handle)
        : base(handle, LibvirtNative.virStorageVolGetName(handle)) => this.handle = handle;

    public string GetPath() => LibvirtNative.TakeString(LibvirtNative.virStorageVolGetPath(handle)) ?? throw LibvirtLibrary.LastError("virStorageVolGetPath", Name);

    public string GetXml() => LibvirtNative.TakeString(LibvirtNative.virStorageVolGetXMLDesc(handle, 0)) ?? throw LibvirtLibrary.LastError("virStorageVolGetXMLDesc", Name);

    public void Resize(ulong capacity, bool allowShrink) =>
        LibvirtLibrary.Check(LibvirtNative.virStorageVolResize(handle, capacity, allowShrink ? LibvirtNative.VIR_STORAGE_VOL_RESIZE_SHRINK : 0), "virStorageVolResize", Name);

    public void Delete() => LibvirtLibrary.Check(LibvirtNative.virStorageVolDelete(handle, 0), "virStorageVolDelete", Name);
}
