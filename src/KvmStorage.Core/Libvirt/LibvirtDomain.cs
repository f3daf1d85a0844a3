namespace KvmStorage.Core.Libvirt;

/// <summary>A domain handle (<c>virDomainPtr</c>).</summary>
public sealed class LibvirtDomain : LibvirtObject
{
    private readonly DomainHandle handle;

    internal LibvirtDomain(DomainHandle handle)
        : base(handle, LibvirtNative.virDomainGetName(handle)) => this.handle = handle;

    public bool IsActive => LibvirtLibrary.Check(LibvirtNative.virDomainIsActive(handle), "virDomainIsActive", Name) == 1;

    public bool IsPersistent => LibvirtLibrary.Check(LibvirtNative.virDomainIsPersistent(handle), "virDomainIsPersistent", Name) == 1;

    /// <summary>The live XML (running VM) or, with <paramref name="inactive"/>, the persistent one.</summary>
    public string GetXml(bool inactive) =>
        LibvirtNative.TakeString(LibvirtNative.virDomainGetXMLDesc(handle, inactive ? LibvirtNative.VIR_DOMAIN_XML_INACTIVE : 0)) ?? throw LibvirtLibrary.LastError("virDomainGetXMLDesc", Name);

    public void AttachDevice(string xml, LibvirtModificationImpact impact) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainAttachDeviceFlags(handle, xml, (uint)impact), "virDomainAttachDeviceFlags", Name);

    public void UpdateDevice(string xml, LibvirtModificationImpact impact) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainUpdateDeviceFlags(handle, xml, (uint)impact), "virDomainUpdateDeviceFlags", Name);

    public void DetachDevice(string xml, LibvirtModificationImpact impact) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainDetachDeviceFlags(handle, xml, (uint)impact), "virDomainDetachDeviceFlags", Name);
}
