using System.Management.Automation;
using System.Security;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Secrets;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeSecret;

/// <summary>
/// New-VolumeSecret: defines the libvirt secret of an encrypted volume (private, persistent, usage: the volume's
/// path), so that a VM given the volume with Add-VMDisk can open it. Offline it writes libvirt's secret files;
/// live it uses libvirt's secret API. The passphrase is proven to open the volume first.
/// </summary>
[Cmdlet(VerbsCommon.New, "VolumeSecret", SupportsShouldProcess = true)]
[OutputType(typeof(Core.Secrets.VolumeSecret))]
public sealed class NewVolumeSecretCommand : KvmCmdlet
{
    /// <summary>The encrypted volume: the object Get-Volume emits, or an image path.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>The volume's passphrase, which becomes the secret's value.</summary>
    [Parameter(Mandatory = true)]
    public SecureString Passphrase { get; set; } = null!;

    /// <summary>The secret's UUID; a new one by default.</summary>
    [Parameter]
    public Guid? Uuid { get; set; }

    /// <summary>A description stored with the secret.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Description { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(Volume, () =>
        {
            using ImagePassphrase passphrase = Passphrases.From(Passphrase)!;
            VolumeAction<Core.Secrets.VolumeSecret> define = Volumes.DefineSecret(SpecOf(Volume), passphrase, Uuid, Description);
            if (ShouldProcess(define.Target, define.Description))
            {
                WriteObject(define.Run(null, CancellationToken));
            }
        });
    }
}
