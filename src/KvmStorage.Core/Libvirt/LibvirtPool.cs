namespace KvmStorage.Core.Libvirt;

/// <summary>Space and state of a pool as <c>virStoragePoolGetInfo</c> reports them.</summary>
public readonly record struct LibvirtPoolInfo(int State, ulong Capacity, ulong Allocation, ulong Available);

/// <summary>A storage pool handle (<c>virStoragePoolPtr</c>).</summary>
public sealed class LibvirtPool : LibvirtObject
{
    private readonly PoolHandle handle;

    internal LibvirtPool(PoolHandle handle, LibvirtConnection connection)
        : base(handle, LibvirtNative.virStoragePoolGetName(handle))
    {
        this.handle = handle;
        Connection = connection;
    }

    public LibvirtConnection Connection { get; }

    public LibvirtPoolInfo GetInfo()
    {
        LibvirtLibrary.Check(LibvirtNative.virStoragePoolGetInfo(handle, out LibvirtNative.VirStoragePoolInfo info), "virStoragePoolGetInfo", Name);
        return new LibvirtPoolInfo(info.State, info.Capacity, info.Allocation, info.Available);
    }

    public bool IsPersistent => LibvirtLibrary.Check(LibvirtNative.virStoragePoolIsPersistent(handle), "virStoragePoolIsPersistent", Name) == 1;

    public bool Autostart
    {
        get
        {
            LibvirtLibrary.Check(LibvirtNative.virStoragePoolGetAutostart(handle, out int value), "virStoragePoolGetAutostart", Name);
            return value != 0;
        }

        set => LibvirtLibrary.Check(LibvirtNative.virStoragePoolSetAutostart(handle, value ? 1 : 0), "virStoragePoolSetAutostart", Name);
    }

    public string GetXml(bool inactive) =>
        LibvirtNative.TakeString(LibvirtNative.virStoragePoolGetXMLDesc(handle, inactive ? LibvirtNative.VIR_STORAGE_XML_INACTIVE : 0)) ?? throw LibvirtLibrary.LastError("virStoragePoolGetXMLDesc", Name);

    public void Build(uint flags = 0) => LibvirtLibrary.Check(LibvirtNative.virStoragePoolBuild(handle, flags), "virStoragePoolBuild", Name);

    /// <summary>Starts the pool (<c>virStoragePoolCreate</c>).</summary>
    public void Start(uint flags = 0) => LibvirtLibrary.Check(LibvirtNative.virStoragePoolCreate(handle, flags), "virStoragePoolCreate", Name);

    /// <summary>Stops the pool (<c>virStoragePoolDestroy</c>); data is untouched.</summary>
    public void Stop() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolDestroy(handle), "virStoragePoolDestroy", Name);

    /// <summary>Deletes the pool's underlying storage (a dir pool's folder, which must be empty).</summary>
    public void Delete() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolDelete(handle, 0), "virStoragePoolDelete", Name);

    public void Undefine() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolUndefine(handle), "virStoragePoolUndefine", Name);

    public void Refresh() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolRefresh(handle, 0), "virStoragePoolRefresh", Name);

    public IReadOnlyList<LibvirtVolume> ListVolumes()
    {
        int count = LibvirtLibrary.Check(LibvirtNative.virStoragePoolListAllVolumes(handle, out IntPtr array, 0), "virStoragePoolListAllVolumes", Name);
        return LibvirtConnection.TakeArray(array, count, p => new LibvirtVolume(new VolumeHandle(p)));
    }

    public LibvirtVolume LookupVolume(string name) =>
        new(LibvirtLibrary.Check(LibvirtNative.virStorageVolLookupByName(handle, name), "virStorageVolLookupByName", name));

    public LibvirtVolume CreateVolume(string xml, bool validate, string? target = null) =>
        new(LibvirtLibrary.Check(LibvirtNative.virStorageVolCreateXML(handle, xml, validate ? LibvirtNative.VIR_STORAGE_VOL_CREATE_VALIDATE : 0), "virStorageVolCreateXML", target));
}
