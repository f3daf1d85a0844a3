using System.Management.Automation;
using KvmStorage.Core.Secrets;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeSecret;

/// <summary>Get-VolumeSecret: lists the host's libvirt secrets (never their values), all, by volume or by UUID.</summary>
[Cmdlet(VerbsCommon.Get, "VolumeSecret", DefaultParameterSetName = AllSet)]
[OutputType(typeof(Core.Secrets.VolumeSecret))]
public sealed class GetVolumeSecretCommand : KvmCmdlet
{
    private const string AllSet = "All";
    private const string ByVolume = "ByVolume";
    private const string ByUuid = "ByUuid";

    /// <summary>The secret of this volume (a Get-Volume object or an image path).</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByVolume, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>Secrets by UUID.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByUuid, ValueFromPipelineByPropertyName = true)]
    public Guid[] Uuid { get; set; } = [];

    protected override void ProcessRecord()
    {
        RunForItem(ParameterSetName == ByVolume ? Volume : KvmHost.Name, () =>
        {
            IReadOnlyList<Core.Secrets.VolumeSecret> secrets = KvmHost.ListSecrets();
            switch (ParameterSetName)
            {
                case ByVolume:
                {
                    string path = ResolveVolume(Volume).Path;
                    Core.Secrets.VolumeSecret found = secrets.FirstOrDefault(s => s.UsageType == "volume" && s.Usage == path)
                        ?? throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, SecretErrorIds.SecretNotFound, $"No libvirt secret is defined for '{path}'.", path);
                    WriteObject(found);
                    break;
                }

                case ByUuid:
                    foreach (Guid uuid in Uuid)
                    {
                        RunForItem(uuid, () => WriteObject(secrets.FirstOrDefault(s => s.Uuid == uuid)
                            ?? throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, SecretErrorIds.SecretNotFound, $"No secret with UUID {uuid} is defined on {KvmHost.Name}.", uuid)));
                    }

                    break;
                default:
                    WriteObject(secrets, enumerateCollection: true);
                    break;
            }
        });
    }
}
